//! `crypt.decrypt-on-read` for QEMU given the key of an encrypted image
//! (spec "Data encryption": the payload is decrypted on every read). The
//! model does not decrypt, so what it can tell is the other half of the
//! sentence: what QEMU returns is never the stored ciphertext. QEMU reads
//! the whole guest disk with the key (`qemu-img convert` to raw in the
//! case's scratch directory); for every allocated guest cluster (at most
//! [`MAX_SAMPLES`]) the first 512 bytes it returned, unless all zero, must
//! not lie verbatim anywhere in the image file. A reader that hands out
//! the clusters as stored fails exactly this.

use super::tools::os;
use crate::runner::corpus::image_state::{find_block, open_model};
use crate::runner::observation::{GuestCheck, Observation};
use crate::runner::process::Proc;
use spec_model::guest::allocated_clusters;
use spec_model::io::Image;
use std::ffi::OsString;
use std::path::Path;

/// Allocated clusters sampled at most.
const MAX_SAMPLES: usize = 64;
/// Disks larger than this are not read whole.
const MAX_DISK: u64 = 64 << 20;
/// How a difference this check finds starts (the judge names
/// `crypt.decrypt-on-read` for it).
pub const CIPHERTEXT: &str = "returned the stored ciphertext";

/// The check, when the image is encrypted and the case gives its key:
/// `None` otherwise. `qemu_img` runs qemu-img with the given arguments
/// (the adapter's way: limits, sandbox, the key).
pub fn guest_with_key(
    qemu_img: impl Fn(&[OsString]) -> std::io::Result<Proc>,
    image: &Path,
    obs: &mut Observation,
) -> Option<GuestCheck> {
    crate::runner::process::case_env::current()?;
    let model = open_model(image).ok()?;
    let h = model.analysis().header.clone()?;
    if h.crypt_method == 0 {
        return None;
    }
    if h.size > MAX_DISK {
        obs.notes.push(format!(
            "the encrypted disk ({} bytes) is too large to read whole: crypt.decrypt-on-read not exercised",
            h.size
        ));
        return None;
    }
    let raw = image.with_file_name("decrypted.raw");
    let args = [
        os("convert"),
        os("-f"),
        os("qcow2"),
        os("-O"),
        os("raw"),
        os(image),
        os(&raw),
    ];
    let p = match qemu_img(&args) {
        Ok(p) => p,
        Err(e) => {
            obs.notes
                .push(format!("qemu-img convert did not start: {e}"));
            return None;
        }
    };
    obs.record(&p);
    let mut g = GuestCheck::default();
    if !p.success() {
        g.read_failed(
            false,
            format!(
                "cannot read the encrypted disk with its key: {}",
                p.first_error_line().unwrap_or_else(|| p.describe_end())
            ),
        );
        return Some(g);
    }
    let data = std::fs::read(&raw).ok()?;
    let _ = std::fs::remove_file(&raw);
    let file = std::fs::File::open(image).ok()?;
    let allocated = Image::new(&file)
        .and_then(|mut img| allocated_clusters(&mut img, &h, 256))
        .unwrap_or_default();
    for &c in allocated.iter().take(MAX_SAMPLES) {
        let Some(block) = usize::try_from(c)
            .ok()
            .and_then(|c| data.get(c..c.checked_add(512)?))
        else {
            continue;
        };
        g.ranges += 1;
        if block.iter().all(|&b| b == 0) {
            continue;
        }
        let found = find_block(image, block);
        g.read_compared(
            false,
            512,
            found.map(|at| {
                format!("{CIPHERTEXT} at guest offset {c:#x}: the 512 bytes it read there lie as they are at file offset {at:#x} (Data encryption: with the key, the payload is decrypted on every read)")
            }),
        );
    }
    Some(g)
}
