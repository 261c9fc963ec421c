"""orders: accepts orders, keeps their state, and moves them on as payments settle."""
