"""rotld's MMRotate plugins, registered under the seed's type names on import."""
