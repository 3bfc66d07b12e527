//! Interface addresses, both families. IPv6 link-local addresses belong to the kernel and are
//! never listed or touched here.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};

use crate::{Error, Netlink};

impl Netlink {
    /// Adds `addr/prefix_len` to the link `link`.
    pub async fn add_address(&self, link: &str, addr: IpAddr, prefix_len: u8) -> Result<(), Error> {
        let index = self.link_index(link).await?;
        self.add_address_to(
            index,
            link,
            IpNetwork::new(addr, prefix_len)
                .map_err(|_| Error::InvalidAddress(format!("{addr}/{prefix_len}")))?,
        )
        .await
    }

    /// Adds `address` to the link with index `index` (named `name`, for errors). An IPv6
    /// address skips duplicate address detection: dcnet's addresses are unique by agreement,
    /// and a tentative address would refuse traffic for a second or two after every attach.
    async fn add_address_to(
        &self,
        index: u32,
        name: &str,
        address: IpNetwork,
    ) -> Result<(), Error> {
        let mut request = self
            .handle
            .address()
            .add(index, address.ip(), address.prefix());
        if address.is_ipv6() {
            let message = request.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        request
            .execute()
            .await
            .map_err(|e| Error::netlink("add address", format!("{address} on {name}"), e))
    }

    /// The IPv4 or (`ipv6`) the IPv6 addresses of the link with index `index`, IPv6 link-local
    /// ones left out.
    pub async fn addresses(&self, index: u32, ipv6: bool) -> Result<Vec<IpNetwork>, Error> {
        let family = if ipv6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::netlink("list addresses", index, e))?;
        Ok(messages
            .iter()
            .filter(|m| m.header.family == family && m.header.index == index)
            .filter_map(|m| {
                // IFA_LOCAL is the interface's own address on point-to-point links.
                let ip = m
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        AddressAttribute::Local(ip) => Some(*ip),
                        _ => None,
                    })
                    .or_else(|| {
                        m.attributes.iter().find_map(|a| match a {
                            AddressAttribute::Address(ip) => Some(*ip),
                            _ => None,
                        })
                    })?;
                IpNetwork::new(ip, m.header.prefix_len).ok()
            })
            .filter(|net| !is_link_local(net.ip()))
            .collect())
    }

    /// Makes `address` the only address of its family of the link with index `index` (named
    /// `name`, for errors); IPv6 link-local addresses stay. Returns whether anything changed.
    pub async fn set_only_address(
        &self,
        index: u32,
        name: &str,
        address: IpNetwork,
    ) -> Result<bool, Error> {
        let present = self.addresses(index, address.is_ipv6()).await?;
        let mut changed = false;
        for other in present.iter().filter(|&&a| a != address) {
            self.delete_address(index, name, *other).await?;
            changed = true;
        }
        if !present.contains(&address) {
            self.add_address_to(index, name, address).await?;
            changed = true;
        }
        Ok(changed)
    }

    async fn delete_address(
        &self,
        index: u32,
        name: &str,
        address: IpNetwork,
    ) -> Result<(), Error> {
        let mut m = AddressMessage::default();
        m.header.family = if address.is_ipv6() {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        m.header.prefix_len = address.prefix();
        m.header.index = index;
        if address.is_ipv4() {
            m.attributes.push(AddressAttribute::Local(address.ip()));
        }
        m.attributes.push(AddressAttribute::Address(address.ip()));
        self.handle
            .address()
            .del(m)
            .execute()
            .await
            .map_err(|e| Error::netlink("delete address", format!("{address} on {name}"), e))
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => false,
        IpAddr::V6(ip) => ip.segments()[0] & 0xffc0 == 0xfe80,
    }
}
