//! CLI (wired once the data layer lands)
