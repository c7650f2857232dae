"""The runner's DSPy extensions, one subpackage per concept as DSPy lays itself out."""
