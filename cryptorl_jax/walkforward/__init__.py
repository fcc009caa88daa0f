"""walkforward."""
