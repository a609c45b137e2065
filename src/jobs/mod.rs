//! Jobs as processes with a run directory (issue 7).
