//! Image generator (valid images from an `ImageSpec`, one-rule mutants, draft revisions); built out in the generator issue.
