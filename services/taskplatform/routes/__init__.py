"""The task API's routes, one module per resource: its endpoints, and ``add_routes``, the
route table ``create_app`` adds to the app's router."""
