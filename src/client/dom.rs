//! Builds a row's tree (`ui::row`) as DOM nodes: elements, attributes and text nodes,
//! never HTML.

use crate::ui::row::Node;
use web_sys::{Document, Element};

/// Replaces `parent`'s children with `nodes`.
pub fn fill(parent: &Element, nodes: &[Node]) {
    let Some(doc) = web_sys::window().and_then(|w| w.document()) else { return };
    parent.set_text_content(None);
    for node in nodes {
        if let Some(built) = build(&doc, node) {
            let _ = parent.append_child(&built);
        }
    }
}

fn build(doc: &Document, node: &Node) -> Option<web_sys::Node> {
    match node {
        Node::Text(t) => Some(doc.create_text_node(t).into()),
        Node::El(e) => {
            let el = doc.create_element(e.tag).ok()?;
            for (name, value) in &e.attrs {
                let _ = el.set_attribute(name, value);
            }
            for kid in &e.kids {
                if let Some(built) = build(doc, kid) {
                    let _ = el.append_child(&built);
                }
            }
            Some(el.into())
        }
    }
}
