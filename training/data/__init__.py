"""Readers for the public training and benchmark formats. Each reads the real release layout and yields
plain records (``records.PoseRecord`` / ``records.InstructionRecord``); templates turn them into chats."""
