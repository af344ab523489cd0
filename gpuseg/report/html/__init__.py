"""The HTML report: ``charts`` (a small SVG chart library) and ``page`` (the sections)."""
