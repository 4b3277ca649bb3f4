//! A TUN device with offloads: opened with IFF_VNET_HDR, so that every
//! read and write starts with a virtio-net header, and with TCP
//! segmentation over IPv6 and checksums left to us (TUNSETOFFLOAD), so
//! that the kernel hands over TCP super-packets instead of one packet per
//! MSS ([`crate::offload`] cuts and joins them). Reads are asynchronous;
//! writes are synchronous and never block (a full queue drops the packet,
//! as a NIC's would).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::rtnl::Rtnl;

/// An open TUN device.
pub struct Tun {
    file: AsyncFd<File>,
}

impl Tun {
    /// Creates TUN device `name` with offloads, sets its MTU and brings it
    /// up. It goes away when the last descriptor is closed.
    pub fn create(name: &str, mtu: u16) -> io::Result<Tun> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("TUN device name {name:?}: 1 to 15 octets"),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let mut request = Ifreq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
            _pad: [0; 22],
        };
        request.name[..name.len()].copy_from_slice(name.as_bytes());
        ioctl_ptr(&file, libc::TUNSETIFF, &mut request)
            .map_err(|e| io::Error::new(e.kind(), format!("TUN device {name}: {e}")))?;
        // IPv6 TCP super-packets, and checksums that need completing
        // (which segmentation implies).
        ioctl_int(
            &file,
            libc::TUNSETOFFLOAD,
            libc::TUN_F_CSUM | libc::TUN_F_TSO6,
        )
        .map_err(|e| io::Error::new(e.kind(), format!("TUN offloads on {name}: {e}")))?;
        let mut rtnl = Rtnl::open(0)?;
        let index = rtnl.link_index(name)?;
        rtnl.set_link_up(index, u32::from(mtu))?;
        // SAFETY: the `File` moves into the `AsyncFd`, which owns it from
        // then on: its descriptor stays open, and the same, until the
        // `AsyncFd` is dropped.
        #[allow(unsafe_code)]
        let file = unsafe { AsyncFd::register_with_interest(file, Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Tun { file })
    }

    /// Reads one virtio-net header and packet (or super-packet) into
    /// `buf`, which should hold 64 KiB and the header.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.file.readable().await?;
            match ready
                .try_io(|f| rustix::io::read(f.get_ref(), &mut *buf).map_err(io::Error::from))
            {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes a virtio-net header and a packet, given in (at most four)
    /// pieces; a full queue drops it.
    pub fn write(&self, pieces: &[&[u8]]) -> io::Result<()> {
        let mut slices = [io::IoSlice::new(&[]); 4];
        let n = pieces.len().min(slices.len());
        for (slice, piece) in slices.iter_mut().zip(pieces) {
            *slice = io::IoSlice::new(piece);
        }
        match rustix::io::writev(self.file.get_ref(), &slices[..n]) {
            Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags.
#[repr(C)]
struct Ifreq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn ioctl_ptr(file: &File, request: libc::Ioctl, arg: &mut Ifreq) -> io::Result<()> {
    // SAFETY: `request` is TUNSETIFF, which reads and writes a `struct
    // ifreq`; `arg` is one (40 octets, the name NUL-terminated) that lives
    // across the call, and the descriptor is open.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::ioctl(file.as_fd().as_raw_fd(), request, arg as *mut Ifreq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ioctl_int(file: &File, request: libc::Ioctl, arg: libc::c_uint) -> io::Result<()> {
    // SAFETY: `request` is TUNSETOFFLOAD, which takes its argument by
    // value; nothing is read or written through it.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::ioctl(file.as_fd().as_raw_fd(), request, libc::c_ulong::from(arg)) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
