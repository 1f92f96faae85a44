"""nlg.datasets.triples: the reference folder's padding and cutting, what it refuses to replace, and
how XML text is read."""

import pytest
from helpers import nlg, snapshot

from nlg.datasets import Decoded
from nlg.datasets.triples import (
    context_text,
    reference_columns,
    write_reference_folder,
    xml_name,
    xml_text,
)
from nlg.files import InputError


def test_columns_pad_with_the_first_reference_and_cut_past_ref_num():
    columns, contexts_cut, refs_cut = reference_columns([["a"], ["b0", "b1", "b2", "b3"], ["c0", "c1"]], 3)
    assert columns == [["a", "b0", "c0"], ["a", "b1", "c1"], ["a", "b2", "c0"]]
    assert (contexts_cut, refs_cut) == (1, 1)


def test_folder_and_hypothesis(tmp_path):
    warnings = write_reference_folder(Decoded([["a"], ["b0", "b1", "b2"]], ["x", "y"]), tmp_path / "refs",
                                      tmp_path / "hyp", 2)
    assert warnings == [f"1 of 2 contexts have more than 2 references: 1 reference beyond the first 2 left out of "
                        f"{tmp_path / 'refs'} (as the paper's decoder does)"]
    assert [(tmp_path / "refs" / f"reference{k}").read_text() for k in range(2)] == ["a\nb0\n", "a\nb1\n"]
    assert (tmp_path / "hyp").read_text() == "x\ny\n"


@pytest.mark.parametrize("case,reason", [
    ("file", "--output_ref_file .*refs: is a file; give a folder"),
    ("inside", "--output_pred_file .*hyp: inside --output_ref_file .*refs, which is replaced as a whole"),
    ("ref_num", "--ref_num must be at least 1, got 0"),
])
def test_refused_outputs_write_nothing(tmp_path, case, reason):
    refs, hyp, ref_num = tmp_path / "refs", tmp_path / "hyp", 2
    if case == "file":
        refs.write_text("e2e-style file\n")
    elif case == "inside":
        hyp = refs / "hyp"
    else:
        ref_num = 0
    with pytest.raises(InputError, match=reason):
        write_reference_folder(Decoded([["a"]], ["x"]), refs, hyp, ref_num)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["refs"] if case == "file" else [])


def test_context_text():
    triples = (("Mars Hill College", "JOINED", "1973"), ("A", "B_c", "C"))
    assert context_text(triples) == "Mars Hill College : JOINED : 1973 | A : B_c : C"
    assert context_text(triples, lower_property=True) == "Mars Hill College : joined : 1973 | A : b_c : C"


# XML text as the release means it, whatever the file's layout

@pytest.mark.parametrize("raw, text", [
    ("Bacon is food.", "Bacon is food."),
    ("\n        Bacon is food.\n      ", "Bacon is food."),  # an indented file
    ("Bacon\n   is \t\n  food.", "Bacon is food."),  # a run holding a line break is one space
    ("\n  \n", ""),
    (None, ""),
    # runs within one line are data, as the releases and their json forms hold them
    ('Bakewell_pudding | served | "Warm  or cold"', 'Bakewell_pudding | served | "Warm  or cold"'),
    ("New York\t it 8.713", "New York\t it 8.713"),
    (" piece of my heart  | DIRECTED_BY | mark tinker", " piece of my heart  | DIRECTED_BY | mark tinker"),
    ("\n  Warm  or\u00a0cold\n", "Warm  or\u00a0cold"),  # only XML's white space is layout
])
def test_xml_text_drops_layout_only(raw, text):
    assert xml_text(raw) == text


def test_xml_names_lose_every_surrounding_and_repeated_space():
    assert xml_name("  Airport \t") == "Airport" and xml_name("Id 7") == "Id 7"
    assert xml_name("Written   Work") == "Written Work" and xml_name(None) is None


# ---------------------------------------------------------------------------------------------
# An indented XML file gives the data of the compact one
# ---------------------------------------------------------------------------------------------


WEBNLG_XML = (
    '<benchmark><entries>'
    '<entry category="Food" eid="Id1" size="2"><modifiedtripleset>'
    '<mtriple>Bacon_Explosion | country | United_States</mtriple>'
    '<mtriple>Bakewell_pudding | served | "Warm  or cold"</mtriple></modifiedtripleset>'
    '<lex comment="good" lid="Id1">Bacon Explosion comes from the United States.\tBakewell pudding is served '
    'warm or cold.</lex><lex comment="toFix" lid="Id2">Bacon.</lex></entry>'
    '<entry category="Artist" eid="Id2" size="1"><modifiedtripleset><mtriple>Ace_Wilder | genre | Hip_hop_music'
    '</mtriple></modifiedtripleset><lex comment="good" lid="Id1">Ace Wilder plays hip  hop music.</lex></entry>'
    '</entries></benchmark>'
)


DART_XML = (
    '<benchmark><entries><entry category="MISC" eid="Id1" size="2"><modifiedtripleset>'
    '<mtriple>Mars Hill College | JOINED | 1973</mtriple>'
    '<mtriple>piece of my heart  | DIRECTED_BY | mark tinker</mtriple></modifiedtripleset>'
    '<lex comment="WikiSQL_decl_sents" lid="Id1">A school from Mars Hill,\tNorth Carolina, joined in 1973.</lex>'
    '<lex comment="WikiTableQuestions_lily" lid="Id2">Mark Tinker directed  piece of my heart.</lex>'
    '</entry></entries></benchmark>'
)


def indented(compact: str) -> str:
    """The file as a pretty-printer or an editor lays it out: every element on its own lines,
    every text on a line of its own, and the longest text broken across two lines."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(compact)
    ET.indent(root, space="  ")
    leaves = [(element, depth) for depth, element in _walk(root, 0) if len(element) == 0 and element.text]
    longest = max((element for element, _ in leaves), key=lambda element: len(element.text))
    longest.text = longest.text.replace(" ", "\n    ", 1)
    for element, depth in leaves:
        element.text = f"\n{'  ' * (depth + 1)}{element.text}\n{'  ' * depth}"
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _walk(element, depth: int):
    yield depth, element
    for child in element:
        yield from _walk(child, depth + 1)


@pytest.mark.parametrize("dataset, name, compact, line", [
    ("webnlg", "dev/1triples/Food.xml", WEBNLG_XML,
     '{"context": "Bacon_Explosion : country : United_States | Bakewell_pudding : served : \\"Warm  or cold\\"", '
     '"completion": "Bacon Explosion comes from the United States.\\tBakewell pudding is served warm or cold.", '
     '"cate": true}'),
    ("dart", "dart-v1.1.1-full-dev.xml", DART_XML,
     '{"context": "Mars Hill College : joined : 1973 | piece of my heart  : directed_by : mark tinker", '
     '"completion": "A school from Mars Hill,\\tNorth Carolina, joined in 1973."}'),
])
def test_indented_and_compact_xml_give_identical_data(tmp_path, capsys, vocab_dir, dataset, name, compact, line):
    outputs = {}
    for layout, text in (("compact", compact), ("indented", indented(compact))):
        assert ("\n      " in text) == (layout == "indented")
        path = tmp_path / layout / name
        path.parent.mkdir(parents=True)
        path.write_text(text)
        assert nlg("data", dataset, "--raw-dir", tmp_path / layout, "--out-dir", tmp_path / f"{layout}_out",
                   "--vocab", vocab_dir) == 0
        outputs[layout] = snapshot(tmp_path / f"{layout}_out")
    assert outputs["indented"] == outputs["compact"]
    assert outputs["compact"]["valid_formatted.jsonl"].decode().splitlines()[0] == line
