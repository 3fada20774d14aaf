"""Token prices and cost accounting."""
