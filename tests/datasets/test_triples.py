"""nlg.datasets.triples: the reference folder's padding and cutting, what it refuses to replace, and
how XML text is read."""

import pytest

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


# Issue 23, case 7: XML text as the release means it, whatever the file's layout

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
