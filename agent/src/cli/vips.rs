//! `dcnet vips`: the load balancer's VIPs as the local agent has programmed them.

use crate::lb::VipStatus;

/// One line per backend, the VIP's columns on its first line only; a VIP without backends
/// gets one line with `-` (its connects are refused).
pub fn render_table(vips: &[VipStatus]) -> String {
    let header = [
        "VIP",
        "PROTO",
        "NAME",
        "CONNS",
        "BACKEND",
        "WEIGHT",
        "STATE",
        "ZONE",
        "BACKEND CONNS",
    ];
    let mut rows = Vec::new();
    for v in vips {
        let vip_cells = [
            v.vip.to_string(),
            v.protocol.to_string(),
            v.name.clone().unwrap_or_else(|| "-".into()),
            v.connections.to_string(),
        ];
        if v.backends.is_empty() {
            let mut row = vip_cells.to_vec();
            row.extend([
                "-".into(),
                "-".into(),
                "no backend".into(),
                "-".into(),
                "-".into(),
            ]);
            rows.push(row);
        }
        for (i, b) in v.backends.iter().enumerate() {
            let mut row = if i == 0 {
                vip_cells.to_vec()
            } else {
                vec![String::new(); 4]
            };
            row.extend([
                b.addr.to_string(),
                b.weight.to_string(),
                b.state.clone(),
                match (&b.region, &b.zone) {
                    (Some(r), Some(z)) => format!("{r}/{z}"),
                    (Some(r), None) => r.clone(),
                    _ => "-".into(),
                },
                b.connections.to_string(),
            ]);
            rows.push(row);
        }
    }
    super::render_table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::service::BackendStatus;

    #[test]
    fn one_line_per_backend() {
        let vips = vec![
            VipStatus {
                vip: "11.1.2.3:80".parse().unwrap(),
                protocol: dcnet_lb::Protocol::Tcp,
                name: Some("web.marathon.l4lb.thisdcos.directory".into()),
                connections: 300,
                backends: vec![
                    BackendStatus {
                        addr: "9.0.2.2:80".parse().unwrap(),
                        weight: 1,
                        state: "up".into(),
                        connections: 160,
                        region: Some("r1".into()),
                        zone: Some("z1".into()),
                    },
                    BackendStatus {
                        addr: "9.0.3.2:80".parse().unwrap(),
                        weight: 0,
                        state: "draining".into(),
                        connections: 140,
                        region: None,
                        zone: None,
                    },
                ],
            },
            VipStatus {
                vip: "10.10.0.1:53".parse().unwrap(),
                protocol: dcnet_lb::Protocol::Udp,
                name: None,
                connections: 0,
                backends: vec![],
            },
        ];
        let table = render_table(&vips);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("VIP "));
        assert!(lines[1].contains("11.1.2.3:80") && lines[1].contains("9.0.2.2:80"));
        assert!(lines[1].contains("r1/z1"));
        assert!(lines[2].trim_start().starts_with("9.0.3.2:80"));
        assert!(lines[2].contains("draining"));
        assert!(lines[3].contains("no backend"));
        assert!(table.lines().all(|l| l == l.trim_end()));
    }
}
