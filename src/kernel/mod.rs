//! Kernel management: fetching Debian kernels into runq's cache, listing
//! what can be booted, and reading kernel images.
//!
//! | file | what it owns |
//! | --- | --- |
//! | [`apt`] | the private apt configuration for one suite (sources, lists, cache) |
//! | [`fetch`](mod@fetch) | `runq kernel fetch`: resolve, download, unpack, extract, install |
//! | [`store`] | cache entries `kernels/<release>/`, their metadata JSON and SHA-256 checks |
//! | [`list`](mod@list) | `runq kernel list`: cached and /boot kernels with capabilities |
//! | [`image`] | bzImage/ELF detection, the ELF kernel inside a bzImage, PVH note, release string |
//!
//! Which kernel a VM boots (`--kernel`, `$RUNQ_KERNEL`) is decided in
//! [`crate::vm::kernel`], from what this module provides.

pub mod apt;
pub mod fetch;
pub mod image;
pub mod list;
pub mod store;

pub use fetch::{fetch, FetchRequest, Fetched, Flavour};
pub use list::{list, KernelList, ListedKernel};
pub use store::{CachedKernel, Capabilities, KernelMetadata};
