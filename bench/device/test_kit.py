"""Tests of the device kit's comparisons (no GPU, no model)."""

import unittest

import kit


def reference(values, top, tol=0.5):
    """A one-position reference with picked logits `values` and top list `top`."""
    return {"positions": [5], "pick": list(range(len(values))), "picked": [values],
            "top": [top], "greedy": [7, 8, 9], "gaps": [10.0, 10.0, 0.01],
            "tolerance_std": tol}


class CompareTest(unittest.TestCase):
    def setUp(self):
        self.values = [0.0, 1.0, 2.0, 3.0]  # std 1.118
        self.ref = reference(self.values, [[3, 3.0], [2, 2.0]])

    def got(self, values, top_id=3):
        return {"pick": kit.check_ids(self.ref), "picked": [values + [values[2]]],
                "top": [[[top_id, max(values)]]]}

    def test_equal_logits_pass(self):
        ok, worst, detail = kit.compare(self.ref, self.got(self.values), [5], 0.5)
        self.assertTrue(ok)
        self.assertEqual(worst, 0.0)
        self.assertEqual(detail, [])

    def test_a_difference_is_measured_in_standard_deviations(self):
        moved = [0.0, 1.0, 2.0, 3.0 + 1.118]
        ok, worst, _ = kit.compare(self.ref, self.got(moved), [5], 0.5)
        self.assertFalse(ok)
        self.assertAlmostEqual(worst, 1.0, places=3)
        ok, _, _ = kit.compare(self.ref, self.got(moved), [5], 1.5)
        self.assertTrue(ok)

    def test_another_top_id_fails_unless_the_reference_is_a_near_tie(self):
        ok, _, detail = kit.compare(self.ref, self.got(self.values, top_id=2), [5], 0.1)
        self.assertFalse(ok)
        self.assertFalse(detail[0]["top_ok"])
        # A gap of 1.0 is 0.89 std: within twice a tolerance of 0.5.
        ok, _, _ = kit.compare(self.ref, self.got(self.values, top_id=2), [5], 0.5)
        self.assertTrue(ok)

    def test_check_ids_add_the_top_ids_once(self):
        ref = reference([0.0, 1.0], [[5, 9.0], [1, 1.0]])
        self.assertEqual(kit.check_ids(ref), [0, 1, 5])


class GreedyTest(unittest.TestCase):
    def test_compared_up_to_the_first_near_tie(self):
        ref = reference([0.0, 1.0, 2.0, 3.0], [[3, 3.0], [2, 2.0]])
        self.assertEqual(kit.greedy_agrees(ref, [7, 8, 1]), (True, 2))
        self.assertEqual(kit.greedy_agrees(ref, [7, 1, 9]), (False, 2))


class SequenceTest(unittest.TestCase):
    def test_ids_are_fixed_and_in_range(self):
        a = kit.ids_for(1000, 50, 1)
        self.assertEqual(a, kit.ids_for(1000, 50, 1))
        self.assertTrue(all(0 <= i < 1000 for i in a))
        self.assertNotEqual(a, kit.ids_for(1000, 50, 2))

    def test_picks_spread_over_the_vocabulary(self):
        p = kit.picks(262144)
        self.assertEqual(len(p), kit.N_PICK)
        self.assertEqual(len(set(p)), kit.N_PICK)
        self.assertLess(max(p), 262144)

    def test_slug(self):
        self.assertEqual(kit.slug("NVIDIA H200 (Vulkan)"), "nvidia-h200-vulkan")


if __name__ == "__main__":
    unittest.main()
