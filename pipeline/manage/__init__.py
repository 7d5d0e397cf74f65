"""Collection management: info, versions, rebuild, migrate, delete."""
