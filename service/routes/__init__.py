"""Route modules, one per resource; ``service.main`` mounts them."""
