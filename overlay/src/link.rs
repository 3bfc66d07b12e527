//! Network links: bridges, veth pairs, state, MTU, bridge ports and moves between namespaces.

use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::{Error, Netlink, Netns};

impl Netlink {
    /// Index of the link named `name`.
    pub async fn link_index(&self, name: &str) -> Result<u32, Error> {
        Ok(self.link(name).await?.header.index)
    }

    /// The link named `name`, as the kernel reports it.
    pub async fn link(&self, name: &str) -> Result<LinkMessage, Error> {
        let mut links = self.handle.link().get().match_name(name).execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link),
            Ok(None) => Err(Error::LinkNotFound(name.to_owned())),
            // ENODEV: the kernel's answer to a GETLINK for a name that does not exist.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                Err(Error::LinkNotFound(name.to_owned()))
            }
            Err(e) => Err(Error::netlink("get link", name, e)),
        }
    }

    /// Creates a bridge named `name` (down).
    pub async fn add_bridge(&self, name: &str) -> Result<(), Error> {
        self.handle
            .link()
            .add(LinkBridge::new(name).build())
            .execute()
            .await
            .map_err(|e| Error::netlink("add bridge", name, e))
    }

    /// Creates a veth pair: `name` here and `peer` in `peer_netns` (here when `None`), both down.
    /// Creating the peer directly in its namespace avoids a moment where it exists, possibly
    /// with a clashing name, in this one.
    pub async fn add_veth(
        &self,
        name: &str,
        peer: &str,
        peer_netns: Option<&Netns>,
    ) -> Result<(), Error> {
        let mut peer_msg = LinkMessageBuilder::<LinkUnspec>::new().name(peer.to_owned());
        if let Some(ns) = peer_netns {
            peer_msg = peer_msg.setns_by_fd(ns.file().as_raw_fd());
        }
        let message = LinkVeth::new(name, peer)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())))
            .build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(|e| Error::netlink("add veth", format!("{name} <-> {peer}"), e))
    }

    /// Sets the link `name` up.
    pub async fn set_up(&self, name: &str) -> Result<(), Error> {
        let index = self.link_index(name).await?;
        self.set(name, "set up", LinkUnspec::new_with_index(index).up())
            .await
    }

    /// Sets the MTU of the link `name`.
    pub async fn set_mtu(&self, name: &str, mtu: u32) -> Result<(), Error> {
        let index = self.link_index(name).await?;
        self.set(name, "set mtu", LinkUnspec::new_with_index(index).mtu(mtu))
            .await
    }

    /// Sets the link's MAC address.
    pub async fn set_mac(&self, name: &str, mac: [u8; 6]) -> Result<(), Error> {
        let index = self.link_index(name).await?;
        self.set(
            name,
            "set mac",
            LinkUnspec::new_with_index(index).address(mac.to_vec()),
        )
        .await
    }

    /// Makes the link `port` a port of the bridge `bridge`.
    pub async fn set_controller(&self, port: &str, bridge: &str) -> Result<(), Error> {
        let bridge_index = self.link_index(bridge).await?;
        let index = self.link_index(port).await?;
        self.set(
            port,
            "set controller",
            LinkUnspec::new_with_index(index).controller(bridge_index),
        )
        .await
    }

    /// Deletes the link `name`.
    pub async fn delete_link(&self, name: &str) -> Result<(), Error> {
        let index = self.link_index(name).await?;
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| Error::netlink("delete link", name, e))
    }

    /// Names of all links in this namespace.
    pub async fn link_names(&self) -> Result<Vec<String>, Error> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::netlink("list links", "*", e))?;
        Ok(links
            .iter()
            .filter_map(|l| {
                l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                })
            })
            .collect())
    }

    async fn set(
        &self,
        name: &str,
        action: &'static str,
        builder: LinkMessageBuilder<LinkUnspec>,
    ) -> Result<(), Error> {
        self.handle
            .link()
            .set(builder.build())
            .execute()
            .await
            .map_err(|e| Error::netlink(action, name, e))
    }
}
