//! Interface addresses.

use std::net::IpAddr;

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
}
