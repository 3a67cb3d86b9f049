//! CoreDNS answers for the API server's Service name, asked from the
//! control plane node the way a pod would (through the Service address).
//! The query is made here and sent with what every Linux host has (bash's
//! `/dev/udp`, dd and od): a real host need not have dig.

use std::{net::Ipv4Addr, time::Duration};

use async_trait::async_trait;
use hickory_proto::{
    op::{Message, MessageType, Query},
    rr::{Name, RData, RecordType},
};

use super::{Context, Error, Outcome, Result, Step, ready};
use crate::{poll, progress::Line};

const NAME: &str = "kubernetes.default.svc.cluster.local.";
const TIMEOUT: Duration = Duration::from_secs(60);

/// Sends its stdin (one query) to port 53 of `$0` over UDP and prints the
/// one datagram that answers, in hex; nothing after 2 s.
pub const ASK_SCRIPT: &str =
    "exec 3<>/dev/udp/$0/53 && cat >&3 && timeout 2 dd bs=4096 count=1 status=none <&3 | od -An -tx1 -v";

pub struct Dns;

#[async_trait]
impl Step for Dns {
    fn name(&self) -> String {
        "dns".into()
    }

    fn needs(&self) -> Vec<String> {
        vec![ready::NAME.into()]
    }

    fn title(&self, ctx: &Context) -> String {
        format!("CoreDNS answers at {}", ctx.spec.dns_service_ip())
    }

    async fn run(&self, ctx: &Context, _: &Line) -> Result<Outcome> {
        let dns = ctx.spec.dns_service_ip().to_string();
        let expected = ctx.spec.api_service_ip();
        let cp = ctx.node(ctx.control_plane());
        let mut id: u16 = 0;
        poll::until("DNS", TIMEOUT, Duration::from_millis(250), || {
            id = id.wrapping_add(1);
            let cp = cp.clone();
            let dns = dns.clone();
            async move {
                let answer = cp
                    .run(&["bash", "-c", ASK_SCRIPT, &dns], Some(query(id, NAME)))
                    .await
                    .map_err(|e| format!("{NAME} via {dns}: {e}"))?;
                let addresses = a_records(id, &from_hex(&answer.stdout)?)?;
                match addresses.as_slice() {
                    [one] if *one == expected => Ok(()),
                    other => Err(format!("{NAME} via {dns} answered {other:?}, expected {expected}")),
                }
            }
        })
        .await
        .map_err(Error::timed_out(format!(
            "CoreDNS logs: `kubectl --context {} -n kube-system logs -l k8s-app=kube-dns`",
            ctx.spec.kube_context()
        )))?;
        Ok(Outcome::Done(format!("{} = {expected}", NAME.trim_end_matches('.'))))
    }
}

/// A recursive query for the A records of `name` (fully qualified).
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let name = Name::from_ascii(name).expect("a valid name");
    let mut message = Message::new();
    message.set_id(id).set_recursion_desired(true).add_query(Query::query(name, RecordType::A));
    message.to_vec().expect("a query encodes")
}

/// The A records of the response to query `id`.
pub fn a_records(id: u16, response: &[u8]) -> Result<Vec<Ipv4Addr>, String> {
    if response.is_empty() {
        return Err("no answer within 2 s".into());
    }
    let message = Message::from_vec(response).map_err(|e| format!("not a DNS response: {e}"))?;
    if message.message_type() != MessageType::Response || message.id() != id {
        return Err(format!("an answer to another query (id {}, not {id})", message.id()));
    }
    Ok(message
        .answers()
        .iter()
        .filter_map(|record| match record.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect())
}

/// `od -An -tx1` output back to bytes.
fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    text.split_whitespace()
        .map(|pair| u8::from_str_radix(pair, 16).map_err(|_| format!("od printed {pair:?}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_and_its_answer_round_trip() {
        let asked = query(7, NAME);
        let mut answer = Message::from_vec(&asked).unwrap();
        answer.set_message_type(MessageType::Response);
        let name = Name::from_ascii(NAME).unwrap();
        answer.add_answer(hickory_proto::rr::Record::from_rdata(
            name,
            5,
            RData::A(hickory_proto::rr::rdata::A([10, 96, 0, 1].into())),
        ));
        let bytes = answer.to_vec().unwrap();
        assert_eq!(a_records(7, &bytes).unwrap(), [Ipv4Addr::new(10, 96, 0, 1)]);
        assert!(a_records(8, &bytes).unwrap_err().contains("another query"));
        assert!(a_records(7, &asked).unwrap_err().contains("another query"), "a query is no answer");
        assert_eq!(a_records(7, &[]).unwrap_err(), "no answer within 2 s");
        let od: String = bytes.iter().map(|b| format!(" {b:02x}")).collect();
        assert_eq!(from_hex(&od).unwrap(), bytes);
    }
}
