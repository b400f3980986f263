//! An image opened for the model's guest reads together with the files it
//! refers to: its backing chain (each backing file's name and format from
//! its header and "backing file format name" extension) and its external
//! data file ("external data file name" extension). Relative names resolve
//! against the image's directory, where the runner puts a case's
//! companions, and only plain relative names of regular files there are
//! followed (never an absolute path, `..`, a protocol or `json:` name, a
//! link or a FIFO: [`crate::runner::corpus::references`]). spec-model reads no files;
//! this is where they are opened.

use spec_model::fields::extension as ext;
use spec_model::layers::{GuestSource, Layered, RawSource};
use spec_model::Model;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Backing chains deeper than this are refused (a loop, most likely).
const MAX_DEPTH: usize = 16;

/// Why an image's layers cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum LayersError {
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `path` is kept for callers; the message is the model's, as a
    /// single image's would be.
    #[error("model: {source}")]
    Model {
        path: PathBuf,
        #[source]
        source: spec_model::CheckError,
    },
    #[error("{}: no qcow2 header", .0.display())]
    NoHeader(PathBuf),
    #[error("{}: the backing chain is deeper than {MAX_DEPTH} images", .0.display())]
    TooDeep(PathBuf),
    /// A name the model does not follow ([`crate::runner::corpus::references`]): not a
    /// plain relative name of a regular file beside the image, where the
    /// runner puts a case's companions.
    #[error("{}: the {what} name {name:?} is not followed (only companion files beside the image are)", image.display())]
    Refused {
        image: PathBuf,
        what: &'static str,
        name: String,
    },
    #[error("{}: cannot read the backing file name: {source}", path.display())]
    BackingName {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `image` with its backing chain and data file, ready for
/// [`Layered::read`].
pub fn open(image: &Path) -> Result<Layered<'static, File>, LayersError> {
    open_at(image, 0)
}

/// Only a regular file, opened non-blocking (`image_state::open_regular`).
fn open_file(path: &Path) -> Result<File, LayersError> {
    crate::runner::corpus::image_state::open_regular(path).map_err(|e| LayersError::Open {
        path: path.to_owned(),
        source: match e {
            crate::runner::corpus::image_state::ReadError::Open(source) => source,
            other => std::io::Error::other(other.to_string()),
        },
    })
}

fn open_at(image: &Path, depth: usize) -> Result<Layered<'static, File>, LayersError> {
    if depth > MAX_DEPTH {
        return Err(LayersError::TooDeep(image.to_owned()));
    }
    let model = Model::open(open_file(image)?).map_err(|source| LayersError::Model {
        path: image.to_owned(),
        source,
    })?;
    let a = model.analysis();
    let h = a
        .header
        .clone()
        .ok_or_else(|| LayersError::NoHeader(image.to_owned()))?;
    let dir = image.parent().unwrap_or(Path::new("."));
    let extension = |t: u32| {
        a.extensions
            .iter()
            .find(|x| x.ext_type == t)
            .map(|x| String::from_utf8_lossy(&x.data).into_owned())
    };
    let backing_format = extension(ext::BACKING_FORMAT);
    let data_file = extension(ext::EXTERNAL_DATA_FILE);
    let mut layered = Layered::new(model);
    if h.backing_file_offset != 0 {
        let name = backing_name(image, h.backing_file_offset, h.backing_file_size)?;
        let path = follow(image, dir, "backing file", &name)?;
        let backing: Box<dyn GuestSource> = if backing_format.as_deref() == Some("raw") {
            let raw = RawSource::new(open_file(&path)?).map_err(|source| LayersError::Model {
                path: path.clone(),
                source,
            })?;
            Box::new(raw)
        } else {
            Box::new(open_at(&path, depth + 1)?)
        };
        layered = layered.with_backing(backing);
    }
    if let Some(name) = data_file {
        let path = follow(image, dir, "external data file", &name)?;
        layered = layered.with_data_file(Box::new(open_file(&path)?));
    }
    Ok(layered)
}

/// `dir/name` when the model may follow `name` from `image` (a plain
/// relative name of a regular file in `dir`), else why not.
fn follow(
    image: &Path,
    dir: &Path,
    what: &'static str,
    name: &str,
) -> Result<PathBuf, LayersError> {
    if crate::runner::corpus::references::followable(name, dir) {
        Ok(dir.join(name))
    } else {
        Err(LayersError::Refused {
            image: image.to_owned(),
            what,
            name: crate::runner::text::short(name),
        })
    }
}

/// The backing file name stored in `image`'s header area.
fn backing_name(image: &Path, offset: u64, size: u32) -> Result<String, LayersError> {
    let err = |source| LayersError::BackingName {
        path: image.to_owned(),
        source,
    };
    let mut f = open_file(image)?;
    let mut buf = vec![0u8; size.min(1023) as usize];
    f.seek(SeekFrom::Start(offset)).map_err(err)?;
    f.read_exact(&mut buf).map_err(err)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
