//! Plan diffs
