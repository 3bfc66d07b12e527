//! A route-netlink session.
//!
//! A netlink socket acts on the network namespace it was opened in, so a [`Netlink`] is opened
//! inside the namespace it should program (see [`crate::Netns::netlink`]) and its requests keep
//! acting there whichever thread later polls them.

use crate::Error;

/// An open rtnetlink connection; the kernel objects live in [`crate::link`] and
/// [`crate::address`], which add their requests to this type.
#[derive(Clone)]
pub struct Netlink {
    pub(crate) handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens a session in the calling thread's network namespace. Must run inside a tokio
    /// runtime, which drives the connection.
    pub fn open() -> Result<Self, Error> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Socket)?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// The underlying rtnetlink handle, for requests this crate does not wrap yet.
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }
}

/// The table a route is in: its `RTA_TABLE` attribute (tables above 255), else the header's.
pub(crate) fn route_table(r: &netlink_packet_route::route::RouteMessage) -> u32 {
    use netlink_packet_route::route::RouteAttribute;
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}
