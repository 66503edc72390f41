"""Engine backends; each module imports its runtime lazily so absent ones cost nothing."""
