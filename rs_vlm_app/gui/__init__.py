"""The desktop app (`rsvlm gui`): PyQt6, the `gui` extra. Only this package imports Qt.

All model work runs in worker processes (rs_vlm_app.jobs); the window only reads their events and
the files they write. See docs/gui.md.
"""
