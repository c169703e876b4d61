"""docs/catalogue holds every fault and attack item the tree cites, with the tests that cite it
(issue 10 item 8): a test name leads to its reason without the catalogues outside the repo."""

import os

import catalogue


def test_docs_catalogue_lists_every_cited_item_with_its_tests():
    for name, text in catalogue.expected().items():
        with open(os.path.join(catalogue.DOCS, name), encoding="utf-8") as f:
            written = f.read()
        assert written == text, ("docs/catalogue/%s no longer matches the citations in the tree (a test renamed "
                                 "or added, a new citation): run `python tests/catalogue.py /work/shared/catalogue` "
                                 "(or without the argument, to keep the item texts already there)" % name)


def test_every_cited_number_is_an_item_of_its_catalogue():
    found = catalogue.citations()
    for kind in catalogue.KINDS:
        with open(os.path.join(catalogue.DOCS, kind + ".md"), encoding="utf-8") as f:
            known = {n for _s, items in catalogue.parse_catalogue(kind, f.read()) for n, _t in items}
        assert set(found[kind]) <= known, (kind, sorted(set(found[kind]) - known))
        assert found[kind], kind        # the scan found citations at all


def test_a_citation_in_a_test_body_or_name_counts_for_that_test():
    found = catalogue.citations()
    assert "tests/credentials/test_attacks.py::test_A12_integers_out_of_range" in found["attacks"][12]["tests"]
    assert "hil/test_device_faults.py::test_fault_31_lost_acquire_ack_retried_yields_exactly_one_grant" in \
        found["faults"][31]["tests"]
    # the request link cites scenario 31 in its docstring: a citation in code, not a test
    assert "host/capwarden/link/requests.py" in found["faults"][31]["cited"]
