//! vcc2026 (cell-eval2 0.20.0 `--preset vcc2026`).
