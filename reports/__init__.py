"""pagerace subpackage."""
