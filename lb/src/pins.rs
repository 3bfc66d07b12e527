//! A directory on a BPF filesystem where maps outlive the agent: the datapath's socket tables
//! are pinned there so that the next run's programs use the same tables (a socket connected
//! through the earlier run's hooks still shows its VIP to `getpeername` and `recvmsg`).
//!
//! The agent keeps it in its state directory: if that directory is not on a BPF filesystem, a
//! private one is mounted there (it stays mounted until reboot or `dcnet lb detach --pins`).
//! Maps pinned by an agent of another layout (key, value size or capacity) are unpinned and
//! made anew rather than reused.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::Error;

/// `statfs.f_type` of a BPF filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// What a pinned map must be to be reused.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub name: &'static str,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Pins {
        path,
        action,
        source,
    }
}

fn c_path(path: &Path) -> Result<CString, Error> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Pins {
        path: path.to_path_buf(),
        action: "use (NUL in the path)",
        source: std::io::ErrorKind::InvalidInput.into(),
    })
}

/// Whether `dir` is on a BPF filesystem.
pub fn is_bpffs(dir: &Path) -> Result<bool, Error> {
    let path = c_path(dir)?;
    // SAFETY: a valid path and a zeroed out-parameter of the right type.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io(dir, "statfs")(std::io::Error::last_os_error()));
    }
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between architectures.
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

/// Makes `dir` a directory on a BPF filesystem, mounting a private one there if it is not on
/// one. Returns whether it mounted.
pub fn ensure(dir: &Path) -> Result<bool, Error> {
    std::fs::create_dir_all(dir).map_err(io(dir, "create"))?;
    if is_bpffs(dir)? {
        return Ok(false);
    }
    let target = c_path(dir)?;
    let (source, kind, options) = (c"bpf", c"bpf", c"mode=0700");
    // SAFETY: valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            kind.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            options.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io(dir, "mount a BPF filesystem on")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(true)
}

/// Removes pins of `layouts` in `dir` whose map is not of that layout (an agent of another
/// version pinned it); returns their names.
pub fn drop_mismatched(dir: &Path, layouts: &[Layout]) -> Result<Vec<&'static str>, Error> {
    let mut dropped = Vec::new();
    for layout in layouts {
        let path = dir.join(layout.name);
        if !path.exists() {
            continue;
        }
        let fits = aya::maps::MapData::from_pin(&path)
            .ok()
            .and_then(|map| map.info().ok())
            .is_some_and(|info| {
                info.key_size() == layout.key_size
                    && info.value_size() == layout.value_size
                    && info.max_entries() == layout.max_entries
            });
        if !fits {
            std::fs::remove_file(&path).map_err(io(&path, "unpin"))?;
            dropped.push(layout.name);
        }
    }
    Ok(dropped)
}

/// A loader that pins the maps of `layouts` in `dir` (made a BPF filesystem if it is not on
/// one): maps an earlier run pinned there are used as they are. Also returns the maps made
/// anew because an earlier run's pins were of another layout.
pub(crate) fn sharing_loader(
    dir: &Path,
    layouts: &[Layout],
) -> Result<(aya::EbpfLoader<'static>, Vec<&'static str>), Error> {
    ensure(dir)?;
    let dropped = drop_mismatched(dir, layouts)?;
    let mut loader = aya::EbpfLoader::new();
    for layout in layouts {
        loader.map_pin_path(layout.name, dir.join(layout.name));
    }
    Ok((loader, dropped))
}

/// Removes the pins of `names` in `dir` (the maps go once no program uses them); returns how
/// many there were.
pub fn unpin(dir: &Path, names: &[&str]) -> Result<usize, Error> {
    let mut removed = 0;
    for name in names {
        let path: PathBuf = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path, "unpin")(e)),
        }
    }
    Ok(removed)
}

/// Unmounts the BPF filesystem at `dir` if one is mounted exactly there.
pub fn unmount(dir: &Path) -> Result<bool, Error> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")
        .map_err(io(Path::new("/proc/self/mounts"), "read"))?;
    let mounted = mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_, at, kind) = (fields.next(), fields.next(), fields.next());
        kind == Some("bpf") && at.map(Path::new) == Some(dir)
    });
    if !mounted {
        return Ok(false);
    }
    let target = c_path(dir)?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io(dir, "unmount")(std::io::Error::last_os_error()));
    }
    Ok(true)
}
