"""The studio's four tabs; each module builds its components and wires their events."""
