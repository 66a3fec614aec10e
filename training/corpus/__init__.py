"""The project's own pose corpus: procedural poses, captions, speculative prompts, renders, fixed splits."""
