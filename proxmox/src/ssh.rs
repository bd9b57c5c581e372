//! SSH executor (pending).
