//! Structure-aware mutation of DER: parse the input into a TLV tree, change one node (delete,
//! duplicate, swap, replace with a node of another input, retag, change its bytes), and write
//! the tree back with correct lengths. Byte-level mutations mostly break a length and die in
//! the first decoder; these reach the code behind it (certificate fields, extensions, CMS
//! attributes, CSR attributes).

use crate::Rng;

#[derive(Clone)]
enum Node {
    /// A primitive value.
    Prim(u8, Vec<u8>),
    /// A constructed value, or an OCTET STRING whose content is DER (extnValue, eContent).
    Cons(u8, Vec<Node>),
}

const MAX_DEPTH: usize = 24;

fn parse_seq(mut b: &[u8], depth: usize) -> Option<Vec<Node>> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let tag = b[0];
        if tag & 0x1f == 0x1f {
            return None; // high tag numbers: not used by what we parse
        }
        let (len, hdr) = match *b.get(1)? {
            n if n < 0x80 => (usize::from(n), 2),
            0x81..=0x83 => {
                let k = usize::from(b[1] & 0x7f);
                let bytes = b.get(2..2 + k)?;
                (
                    bytes.iter().fold(0usize, |a, x| a << 8 | usize::from(*x)),
                    2 + k,
                )
            }
            _ => return None,
        };
        let body = b.get(hdr..hdr.checked_add(len)?)?;
        let node = if tag & 0x20 != 0 {
            Node::Cons(tag, parse_seq(body, depth + 1)?)
        } else if tag == 0x04 && body.first() == Some(&0x30) {
            match parse_seq(body, depth + 1) {
                Some(kids) => Node::Cons(tag, kids),
                None => Node::Prim(tag, body.to_vec()),
            }
        } else {
            Node::Prim(tag, body.to_vec())
        };
        out.push(node);
        b = &b[hdr + len..];
    }
    Some(out)
}

fn write_len(out: &mut Vec<u8>, len: usize) {
    match len {
        0..=0x7f => out.push(len as u8),
        0x80..=0xff => out.extend_from_slice(&[0x81, len as u8]),
        0x100..=0xffff => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
        _ => out.extend_from_slice(&[0x83, (len >> 16) as u8, (len >> 8) as u8, len as u8]),
    }
}

fn write(nodes: &[Node], out: &mut Vec<u8>) {
    for n in nodes {
        let (tag, body) = match n {
            Node::Prim(t, b) => (*t, b.clone()),
            Node::Cons(t, kids) => {
                let mut b = Vec::new();
                write(kids, &mut b);
                (*t, b)
            }
        };
        out.push(tag);
        write_len(out, body.len());
        out.extend_from_slice(&body);
    }
}

/// Paths (child indices from the top) of every node.
fn paths(nodes: &[Node], prefix: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
    for (i, n) in nodes.iter().enumerate() {
        prefix.push(i);
        out.push(prefix.clone());
        if let Node::Cons(_, kids) = n {
            paths(kids, prefix, out);
        }
        prefix.pop();
    }
}

/// The list holding the node at `path`, and its index there.
fn parent_of<'a>(nodes: &'a mut Vec<Node>, path: &[usize]) -> Option<(&'a mut Vec<Node>, usize)> {
    let (&last, up) = path.split_last()?;
    let mut list = nodes;
    for &i in up {
        match list.get_mut(i)? {
            Node::Cons(_, kids) => list = kids,
            Node::Prim(..) => return None,
        }
    }
    (last < list.len()).then_some((list, last))
}

fn random_node(rng: &mut Rng, donor: Option<&[u8]>) -> Node {
    if let Some(tree) = donor.and_then(|d| parse_seq(d, 0)) {
        let mut all = Vec::new();
        paths(&tree, &mut Vec::new(), &mut all);
        if !all.is_empty() {
            let p = &all[rng.below(all.len())];
            let mut tree = tree;
            if let Some((list, i)) = parent_of(&mut tree, p) {
                return list[i].clone();
            }
        }
    }
    match rng.below(6) {
        0 => Node::Prim(0x02, vec![0]),
        1 => Node::Prim(0x05, Vec::new()),
        2 => Node::Prim(0x06, vec![0x55, 0x1d, 0x11]), // id-ce-subjectAltName
        3 => Node::Prim(0x0c, "\u{e9}\u{1f600}".as_bytes().to_vec()),
        4 => Node::Prim(0x01, vec![0xff]),
        _ => Node::Cons(0x30, Vec::new()),
    }
}

const TAGS: &[u8] = &[
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0c, 0x13, 0x16, 0x17, 0x18, 0x1e, 0x30, 0x31, 0x80, 0x81,
    0x82, 0x86, 0x87, 0xa0, 0xa1, 0xa3,
];

/// A structural mutant of `input`, or `None` when it is not DER this walker reads.
pub fn mutate(rng: &mut Rng, input: &[u8], donor: Option<&[u8]>) -> Option<Vec<u8>> {
    let mut tree = parse_seq(input, 0)?;
    let mut all = Vec::new();
    paths(&tree, &mut Vec::new(), &mut all);
    if all.is_empty() {
        return None;
    }
    let path = all[rng.below(all.len())].clone();
    let choice = rng.below(8);
    let donated = (choice == 3 || choice == 7).then(|| random_node(rng, donor));
    let (list, i) = parent_of(&mut tree, &path)?;
    match choice {
        0 => {
            list.remove(i);
        }
        1 => {
            let copy = list[i].clone();
            list.insert(i, copy);
        }
        2 if list.len() > 1 => {
            let j = rng.below(list.len());
            list.swap(i, j);
        }
        3 => list[i] = donated?,
        4 => {
            let t = TAGS[rng.below(TAGS.len())];
            match &mut list[i] {
                Node::Prim(tag, body) if t & 0x20 == 0 => {
                    *tag = t;
                    let _ = body;
                }
                Node::Cons(tag, _) if t & 0x20 != 0 || t == 0x04 => *tag = t,
                _ => {}
            }
        }
        5 => match &mut list[i] {
            Node::Prim(_, body) if !body.is_empty() => {
                let at = rng.below(body.len());
                match rng.below(4) {
                    0 => body[at] = rng.byte(),
                    1 => body.truncate(at),
                    2 => body[at] ^= 0x80,
                    _ => body.insert(at, rng.byte()),
                }
            }
            Node::Prim(_, body) => body.push(rng.byte()),
            Node::Cons(_, kids) => kids.clear(),
        },
        6 => {
            // Unwrap a constructed node into its parent.
            if let Node::Cons(_, kids) = list[i].clone() {
                list.splice(i..=i, kids);
            }
        }
        _ => list.insert(i, donated?),
    }
    let mut out = Vec::with_capacity(input.len() + 16);
    write(&tree, &mut out);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_back() {
        // SEQUENCE { INTEGER 5, OCTET STRING { SEQUENCE { NULL } } }
        let der = [
            0x30, 0x09, 0x02, 0x01, 0x05, 0x04, 0x04, 0x30, 0x02, 0x05, 0x00,
        ];
        let tree = parse_seq(&der, 0).unwrap();
        let mut out = Vec::new();
        write(&tree, &mut out);
        assert_eq!(out, der);
        let mut rng = Rng(1);
        for _ in 0..1000 {
            let _ = mutate(&mut rng, &der, Some(&der));
        }
    }
}
