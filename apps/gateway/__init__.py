"""gateway: the platform's single public entry; forwards /api/orders to the orders service."""
