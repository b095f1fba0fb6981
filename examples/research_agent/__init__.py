"""An AI research agent as a durable perdure task; see app.py and demo.py."""
