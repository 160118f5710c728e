SELECT id, customer_id, status, amount, ordered_at, updated_at
FROM orders
WHERE updated_at > '{since}'
