"""The commands, one module each; ``cli`` dispatches to them and none imports ``cli``."""
