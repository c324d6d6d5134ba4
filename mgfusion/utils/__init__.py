"""Small shared utilities (benchmark timing/reporting, atomic file writes)."""
