//! Interface addresses.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnetwork::Ipv4Network;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};

use crate::{Error, Netlink};

impl Netlink {
    /// Adds `addr/prefix_len` to the link `link`.
    pub async fn add_address(&self, link: &str, addr: IpAddr, prefix_len: u8) -> Result<(), Error> {
        let index = self.link_index(link).await?;
        self.handle
            .address()
            .add(index, addr, prefix_len)
            .execute()
            .await
            .map_err(|e| Error::netlink("add address", format!("{addr}/{prefix_len} on {link}"), e))
    }

    /// The IPv4 addresses of the link with index `index`.
    pub async fn ipv4_addresses(&self, index: u32) -> Result<Vec<Ipv4Network>, Error> {
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
            .filter(|m| m.header.family == AddressFamily::Inet && m.header.index == index)
            .filter_map(|m| {
                let ip = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })?;
                Ipv4Network::new(ip, m.header.prefix_len).ok()
            })
            .collect())
    }

    /// Makes `address` the only IPv4 address of the link with index `index` (named `name`, for
    /// errors). Returns whether anything changed.
    pub async fn set_only_ipv4_address(
        &self,
        index: u32,
        name: &str,
        address: Ipv4Network,
    ) -> Result<bool, Error> {
        let present = self.ipv4_addresses(index).await?;
        let mut changed = false;
        for other in present.iter().filter(|&&a| a != address) {
            self.delete_ipv4_address(index, name, *other).await?;
            changed = true;
        }
        if !present.contains(&address) {
            self.handle
                .address()
                .add(index, IpAddr::V4(address.ip()), address.prefix())
                .execute()
                .await
                .map_err(|e| Error::netlink("add address", format!("{address} on {name}"), e))?;
            changed = true;
        }
        Ok(changed)
    }

    async fn delete_ipv4_address(
        &self,
        index: u32,
        name: &str,
        address: Ipv4Network,
    ) -> Result<(), Error> {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = address.prefix();
        m.header.index = index;
        m.attributes
            .push(AddressAttribute::Local(IpAddr::V4(address.ip())));
        m.attributes
            .push(AddressAttribute::Address(IpAddr::V4(address.ip())));
        self.handle
            .address()
            .del(m)
            .execute()
            .await
            .map_err(|e| Error::netlink("delete address", format!("{address} on {name}"), e))
    }
}
