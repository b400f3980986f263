//! The generator: valid qcow2 images with persistent bitmaps from an
//! [`ImageSpec`] (hand-written, or random through `arbitrary` and
//! `quickcheck` within a [`Config`]), and the expected model output for
//! each, computed from the spec rather than by running the model.

pub mod build;
pub mod contents;
pub mod corpus;
pub mod expected;
pub mod files;
pub mod shrink;
pub mod sink;
pub mod spec;

pub use build::{build, build_into, BuildError, Built, Layout};
pub use expected::Expected;
pub use spec::{BitmapSpec, Config, GuestWrite, ImageSpec, LayoutSpec};
pub mod cases;
pub mod manifest;
pub mod mutate;
pub mod qemu_made;
pub mod revisions;
pub use manifest::{Manifest, ManifestCase};
