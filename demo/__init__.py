"""`make demo`: the whole product in one command (backend + headless Blender driving the add-on)."""
