"""Where wrapped data keys live (key stores) and who wraps them (key-encryption keys): two separate axes."""
