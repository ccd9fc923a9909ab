"""2D editing models coupled with SEVA: IC-Light (more to come: ControlNet, Magic Fixup, Neural Gaffer)."""
