"""HTTP handlers, one module per resource; each exposes `add_routes(app)`."""
