//! A model of CARP's election between routers, for the lab: who is MASTER given who is up,
//! whether they hear each other, their advskew and preempt. Pure, so the drill's script says
//! what the kernels should show and the daemons must follow.
//!
//! The rules are carp(4)'s, reduced to what the drill needs (reference/freebsd-carp.md):
//! a node that is down shows INIT; nodes that cannot hear each other each become MASTER (the
//! split brain); among nodes that hear each other, a MASTER that hears a more preferred
//! advertisement (lower advskew) steps down, and with preempt the most preferred node takes
//! over; without preempt a sole MASTER stays MASTER.

use carpd::carp::CarpState;

/// One router as the election sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node {
    pub up: bool,
    pub advskew: u32,
}

/// The states after an election among `nodes`, given the states before and whether the
/// link between them is cut.
pub fn elect(
    nodes: &[Node],
    before: &[CarpState],
    partitioned: bool,
    preempt: bool,
) -> Vec<CarpState> {
    let up: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].up).collect();
    let mut out = vec![CarpState::Init; nodes.len()];
    if partitioned {
        for &i in &up {
            out[i] = CarpState::Master;
        }
        return out;
    }
    let best = up.iter().copied().min_by_key(|&i| (nodes[i].advskew, i));
    let masters: Vec<usize> = up
        .iter()
        .copied()
        .filter(|&i| before.get(i) == Some(&CarpState::Master))
        .collect();
    let winner = match (preempt, masters.as_slice()) {
        (true, _) | (false, []) => best,
        (false, [only]) => Some(*only),
        // Several MASTERs meet (a healed split brain): the more preferred one stays.
        (false, many) => many.iter().copied().min_by_key(|&i| (nodes[i].advskew, i)),
    };
    for &i in &up {
        out[i] = if Some(i) == winner {
            CarpState::Master
        } else {
            CarpState::Backup
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use CarpState::*;

    const A: Node = Node {
        up: true,
        advskew: 0,
    };
    const B: Node = Node {
        up: true,
        advskew: 100,
    };
    const DOWN: Node = Node {
        up: false,
        advskew: 0,
    };

    /// Nodes, states before, partitioned, preempt, states after.
    type Case<'a> = (&'a [Node], &'a [CarpState], bool, bool, &'a [CarpState]);

    #[test]
    fn table() {
        let cases: &[Case] = &[
            (&[A, B], &[Init, Init], false, true, &[Master, Backup]),
            (&[DOWN, B], &[Master, Backup], false, true, &[Init, Master]),
            // The preferred node returns: with preempt it takes over, without it waits.
            (&[A, B], &[Backup, Master], false, true, &[Master, Backup]),
            (&[A, B], &[Backup, Master], false, false, &[Backup, Master]),
            (&[A, B], &[Master, Backup], true, true, &[Master, Master]),
            (&[A, B], &[Master, Master], false, false, &[Master, Backup]),
            (&[DOWN, DOWN], &[Master, Backup], false, true, &[Init, Init]),
        ];
        for (nodes, before, part, preempt, want) in cases {
            assert_eq!(
                elect(nodes, before, *part, *preempt),
                want.to_vec(),
                "{nodes:?} {before:?} partitioned={part} preempt={preempt}"
            );
        }
    }

    #[test]
    fn at_most_one_master_unless_partitioned() {
        let states = [Init, Backup, Master];
        for a in 0..2 {
            for b in 0..2 {
                for sa in states {
                    for sb in states {
                        for preempt in [false, true] {
                            let nodes = [
                                Node {
                                    up: a == 1,
                                    advskew: 0,
                                },
                                Node {
                                    up: b == 1,
                                    advskew: 100,
                                },
                            ];
                            let out = elect(&nodes, &[sa, sb], false, preempt);
                            let masters = out.iter().filter(|s| **s == Master).count();
                            assert!(masters <= 1, "{nodes:?} {out:?}");
                            assert_eq!(masters == 1, a == 1 || b == 1, "{nodes:?} {out:?}");
                        }
                    }
                }
            }
        }
    }
}
