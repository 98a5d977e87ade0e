"""Configuration: settings and their sources, values, URLs of every scheme, platform defaults, secret and TLS files."""
