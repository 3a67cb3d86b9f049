//! What every layer of vigil shares: the user's choices for a cluster, the
//! pinned upstream releases, the names of the images built for them, and
//! the content keys that decide when something is rebuilt.
#![forbid(unsafe_code)]

/// The user's choices, their defaults, and what derives from them.
pub mod cluster;
/// The names of the images a cluster runs, for one image repository.
pub mod images;
/// Content keys: a rebuild is skipped when the key of its inputs is unchanged.
pub mod key;
/// The spec a cluster was made with, saved on its nodes and in it.
pub mod saved_spec;
/// The pinned upstream releases.
pub mod versions;
