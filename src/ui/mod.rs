//! The ratatui workbench (issue 8).
