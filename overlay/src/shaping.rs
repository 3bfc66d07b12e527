//! Egress bandwidth limits of container interfaces: a token bucket (`tbf`) as the root qdisc
//! of the interface inside the container, so a task's sending is paced where it starts. TCP
//! follows the bucket without losses (the qdisc queues, and TCP small queues keep each
//! socket's share of that queue small); a datagram flood beyond the queue is dropped there,
//! before it costs the node anything. The task has no CAP_NET_ADMIN to take it away.
//!
//! Why a token bucket and not EDT (`skb->tstamp` paced by `fq`): EDT needs the `fq` qdisc, which
//! kernels built without `CONFIG_NET_SCH_FQ` (this project's machines among them) lack, while
//! `tbf` is in every kernel with traffic control.
//!
//! rtnetlink has no builder for tbf's options, so they are written here as the kernel reads
//! them (`include/uapi/linux/pkt_sched.h`): `TCA_TBF_PARMS` (a `struct tc_tbf_qopt`), with the
//! rate also as `TCA_TBF_RATE64` (rates past 4 GB/s) and the bucket size as `TCA_TBF_BURST`.

use futures::TryStreamExt;
use netlink_packet_core::DefaultNla;
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};

use crate::{Error, Netlink};

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
/// `TC_LINKLAYER_ETHERNET`: sizes are taken as they are (no ATM cell rounding, no rate table).
const LINKLAYER_ETHERNET: u8 = 1;
/// Bits of `psched` ticks: tbf's `buffer` and `mtu` are in units of 64 ns.
const PSCHED_SHIFT: u32 = 6;

/// A token bucket for `bits_per_sec`: the bucket holds `burst` bytes, the queue `limit` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    pub bytes_per_sec: u64,
    pub burst: u32,
    pub limit: u32,
}

impl TokenBucket {
    /// The bucket dcnet uses for a limit of `bits_per_sec`: a burst of 5 ms of the rate (at
    /// least 64 KiB plus a frame, so a full TSO segment passes whole), a queue of 50 ms of it
    /// (at least two bursts): a task keeps its own latency low as well as its neighbours'.
    pub fn for_rate(bits_per_sec: u64) -> Self {
        let bytes_per_sec = (bits_per_sec / 8).max(1);
        let burst = (bytes_per_sec / 200).clamp(65_536 + 1_514, u64::from(u32::MAX / 4)) as u32;
        let limit = (bytes_per_sec / 20).clamp(2 * u64::from(burst), u64::from(u32::MAX)) as u32;
        Self {
            bytes_per_sec,
            burst,
            limit,
        }
    }

    /// `TCA_OPTIONS`' nested attributes for tbf.
    fn options(&self) -> Vec<TcOption> {
        // struct tc_ratespec { u8 cell_log; u8 linklayer; u16 overhead; s16 cell_align;
        // u16 mpu; u32 rate; } (12 bytes), then the peak rate (unused: zero), then
        // u32 limit, u32 buffer (ticks), u32 mtu (ticks).
        let mut parms = Vec::with_capacity(36);
        let mut ratespec = |rate: u64, linklayer: u8| {
            parms.push(0); // cell_log
            parms.push(linklayer);
            parms.extend_from_slice(&0u16.to_ne_bytes()); // overhead
            parms.extend_from_slice(&0i16.to_ne_bytes()); // cell_align
            parms.extend_from_slice(&0u16.to_ne_bytes()); // mpu
            parms.extend_from_slice(&(rate.min(u64::from(u32::MAX)) as u32).to_ne_bytes());
        };
        ratespec(self.bytes_per_sec, LINKLAYER_ETHERNET);
        ratespec(0, LINKLAYER_ETHERNET);
        let ticks = |bytes: u32| -> u32 {
            let ns = u128::from(bytes) * 1_000_000_000 / u128::from(self.bytes_per_sec);
            (ns >> PSCHED_SHIFT).min(u128::from(u32::MAX)) as u32
        };
        parms.extend_from_slice(&self.limit.to_ne_bytes());
        parms.extend_from_slice(&ticks(self.burst).to_ne_bytes());
        parms.extend_from_slice(&0u32.to_ne_bytes()); // mtu: no peak rate
        vec![
            TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, parms)),
            TcOption::Other(DefaultNla::new(
                TCA_TBF_RATE64,
                self.bytes_per_sec.to_ne_bytes().to_vec(),
            )),
            TcOption::Other(DefaultNla::new(
                TCA_TBF_BURST,
                self.burst.to_ne_bytes().to_vec(),
            )),
        ]
    }
}

impl Netlink {
    /// Limits what leaves the link `link` to `bits_per_sec` (a token bucket as its root qdisc),
    /// or lifts the limit (`None`: the link's default qdisc again).
    pub async fn set_egress_limit(
        &self,
        link: &str,
        bits_per_sec: Option<u64>,
    ) -> Result<(), Error> {
        let index = self.link_index(link).await?;
        let Some(bits) = bits_per_sec else {
            let mut del = self.handle.qdisc().del(index as i32);
            del.message_mut().header.parent = TcHandle::ROOT;
            let gone = del.execute().await;
            return match gone {
                // No root qdisc of ours to delete.
                Err(rtnetlink::Error::NetlinkError(e))
                    if e.raw_code() == -libc::ENOENT || e.raw_code() == -libc::EINVAL =>
                {
                    Ok(())
                }
                other => other
                    .map_err(|e| Error::netlink("delete the root qdisc of", link.to_owned(), e)),
            };
        };
        let bucket = TokenBucket::for_rate(bits);
        let mut message = TcMessage::with_index(index as i32);
        message.header.parent = TcHandle::ROOT;
        message.attributes.push(TcAttribute::Kind("tbf".into()));
        message
            .attributes
            .push(TcAttribute::Options(bucket.options()));
        let mut request = netlink_packet_core::NetlinkMessage::from(
            netlink_packet_route::RouteNetlinkMessage::NewQueueDiscipline(message),
        );
        request.header.flags = netlink_packet_core::NLM_F_REQUEST
            | netlink_packet_core::NLM_F_ACK
            | netlink_packet_core::NLM_F_CREATE
            | netlink_packet_core::NLM_F_REPLACE;
        let mut handle = self.handle.clone();
        let mut answers = handle
            .request(request)
            .map_err(|e| Error::netlink("replace the root qdisc of", link.to_owned(), e))?;
        while let Some(answer) = futures::StreamExt::next(&mut answers).await {
            if let netlink_packet_core::NetlinkPayload::Error(e) = answer.payload
                && e.code.is_some()
            {
                return Err(Error::netlink(
                    "replace the root qdisc of",
                    format!("{link} (tbf {bits} bit/s)"),
                    rtnetlink::Error::NetlinkError(e),
                ));
            }
        }
        Ok(())
    }

    /// The kind of the root qdisc of `link` (`noqueue`, `tbf`, ...), if it has one.
    pub async fn root_qdisc(&self, link: &str) -> Result<Option<String>, Error> {
        let index = self.link_index(link).await? as i32;
        let mut dump = self.handle.qdisc().get().index(index).execute();
        while let Some(message) = dump
            .try_next()
            .await
            .map_err(|e| Error::netlink("list the qdiscs of", link.to_owned(), e))?
        {
            if message.header.index == index && message.header.parent == TcHandle::ROOT {
                return Ok(message.attributes.iter().find_map(|a| match a {
                    TcAttribute::Kind(kind) => Some(kind.clone()),
                    _ => None,
                }));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_a_few_ms_of_its_rate_and_a_whole_segment() {
        let b = TokenBucket::for_rate(50_000_000);
        assert_eq!(b.bytes_per_sec, 6_250_000);
        assert_eq!(b.burst, 65_536 + 1_514, "5 ms is less than a TSO segment");
        assert_eq!(b.limit, 312_500, "50 ms of the rate");
        let fast = TokenBucket::for_rate(10_000_000_000);
        assert_eq!(fast.burst, 6_250_000);
        assert_eq!(fast.limit, 62_500_000);
    }

    #[test]
    fn tbf_parameters_are_laid_out_as_the_kernel_reads_them() {
        let b = TokenBucket::for_rate(8_000_000); // 1 MB/s: a byte is 1 us
        let options = b.options();
        let TcOption::Other(parms) = &options[0] else {
            panic!("parms first");
        };
        let mut bytes = vec![0u8; netlink_packet_core::Nla::value_len(parms)];
        netlink_packet_core::Nla::emit_value(parms, &mut bytes);
        assert_eq!(bytes.len(), 36);
        assert_eq!(bytes[1], LINKLAYER_ETHERNET);
        assert_eq!(
            u32::from_ne_bytes(bytes[8..12].try_into().unwrap()),
            1_000_000
        );
        assert_eq!(
            u32::from_ne_bytes(bytes[24..28].try_into().unwrap()),
            b.limit
        );
        // The bucket in 64 ns ticks: 67,050 bytes at 1 byte/us.
        let buffer = u32::from_ne_bytes(bytes[28..32].try_into().unwrap());
        assert_eq!(buffer, ((67_050u64 * 1_000) >> 6) as u32);
    }
}
