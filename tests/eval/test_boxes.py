import numpy as np
import pytest
from scipy import ndimage

from occon_plugin.eval.boxes import box_iou_inclusive, max_box_acc_v2, normalize_cam, resize_boxes


def blob_cam(shape, *blobs):
    """A CAM with constant-valued rectangles: blobs are (value, y0, y1, x0, x1), slices end-exclusive."""
    cam = np.zeros(shape)
    for value, y0, y1, x0, x1 in blobs:
        cam[y0:y1, x0:x1] = value
    return cam


def test_inclusive_iou_hand_computed():
    # [2,2,6,5] has 5x4 = 20 pixels, [2,2,5,4] has 4x3 = 12, all inside -> 12/20
    assert box_iou_inclusive([[2, 2, 6, 5]], [[2, 2, 5, 4]])[0, 0] == pytest.approx(0.6)
    assert box_iou_inclusive([[0, 0, 0, 0]], [[0, 0, 0, 0]])[0, 0] == 1.0  # one pixel
    assert box_iou_inclusive([[0, 0, 1, 1]], [[2, 2, 3, 3]])[0, 0] == 0.0


def test_single_blob_box_follows_reference_convention():
    # blob rows 2..4, cols 2..5 -> boundingRect (2, 2, w=4, h=3) -> box [2, 2, 6, 5]
    cam = blob_cam((10, 10), (1.0, 2, 5, 2, 6))
    exact = max_box_acc_v2([cam], [[[2, 2, 6, 5]]])
    assert exact["max_box_acc_v2"] == 1.0 and exact["corloc"] == 1.0
    # the tight pixel box has IoU 0.6 with it: correct at 0.3 and 0.5, wrong at 0.7
    tight = max_box_acc_v2([cam], [[[2, 2, 5, 4]]])
    assert tight["box_acc"] == {0.3: 1.0, 0.5: 1.0, 0.7: 0.0}
    assert tight["max_box_acc_v2"] == pytest.approx(2 / 3)


def test_all_contours_count_but_corloc_uses_the_largest():
    # big blob (largest contour) far from the GT, small blob exactly on it
    cam = blob_cam((20, 20), (1.0, 0, 10, 0, 10), (1.0, 14, 17, 14, 18))
    res = max_box_acc_v2([cam], [[[14, 14, 18, 17]]])
    assert res["max_box_acc_v2"] == 1.0
    assert res["corloc"] == 0.0


def test_threshold_sweep_finds_the_inner_blob():
    # ring at 0.4 around a core at 1.0; GT is the core's box [5, 5, 9, 9]
    cam = blob_cam((20, 20), (0.4, 1, 17, 1, 17), (1.0, 5, 9, 5, 9))
    res = max_box_acc_v2([cam], [[[5, 5, 9, 9]]], deltas=(0.5,))
    curve = np.array(res["accuracy_curves"][0.5])
    thresholds = np.array(res["thresholds"])
    # u8 ring value 102: foreground while int(t * 255) < 102, i.e. t <= 0.39 -> outer box, IoU 25/289
    assert (curve[thresholds < 0.395] == 0).all() and (curve[thresholds > 0.395] == 1).all()
    assert res["best_threshold"][0.5] == pytest.approx(0.4)
    assert res["box_acc"][0.5] == 1.0


def test_accuracy_is_fraction_of_images():
    hit = blob_cam((10, 10), (1.0, 2, 5, 2, 6))
    miss = blob_cam((10, 10), (1.0, 7, 10, 7, 10))
    res = max_box_acc_v2([hit, miss, hit, hit], [[[2, 2, 6, 5]]] * 4, deltas=(0.5,))
    assert res["box_acc"][0.5] == 0.75 and res["n_images"] == 4


def test_constant_cam_is_zero_map_and_errors():
    assert normalize_cam(np.full((3, 3), 7.0)).max() == 0
    assert normalize_cam([[0, 2], [4, 8]])[1, 1] == 1.0
    with pytest.raises(ValueError, match="no ground-truth box"):
        max_box_acc_v2([np.zeros((4, 4))], [np.zeros((0, 4))])
    with pytest.raises(ValueError, match="2 CAMs but 1"):
        max_box_acc_v2([np.zeros((4, 4))] * 2, [[[0, 0, 1, 1]]])


def test_resize_boxes_truncates_like_reference():
    out = resize_boxes([[10, 10, 99, 49]], image_size=(100, 50), target_size=(224, 224))
    assert out.tolist() == [[22, 44, 221, 219]]


# ---- brute force: connected components instead of OpenCV contours, loops instead of arrays ----
def brute_boxes(binary):
    """Boxes of all OpenCV RETR_TREE contours: 8-connected foreground components, plus each hole
    (4-connected background component off the border) grown by its one-pixel foreground rim."""
    h, w = binary.shape
    boxes = []
    fg, _ = ndimage.label(binary, structure=np.ones((3, 3)))
    for sl in ndimage.find_objects(fg):
        boxes.append((sl[1].start, sl[0].start, sl[1].stop, sl[0].stop))
    bg, _ = ndimage.label(~binary)
    for sl in ndimage.find_objects(bg):
        if sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == h or sl[1].stop == w:
            continue
        boxes.append((sl[1].start - 1, sl[0].start - 1, sl[1].stop + 1, sl[0].stop + 1))
    if not boxes:
        return [(0, 0, 0, 0)]
    return [(x0, y0, min(x1, w - 1), min(y1, h - 1)) for x0, y0, x1, y1 in boxes]


def brute_iou(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(0, iw) * max(0, ih)
    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return inter / union if union > 0 else 0.0


def brute_max_box_acc_v2(cams, gts, deltas, interval):
    thresholds = np.arange(0, 1, interval)
    box_acc = {}
    for d in deltas:
        accs = []
        for t in thresholds:
            correct = 0
            for cam, gt in zip(cams, gts):
                u8 = ((cam - cam.min()) / (cam.max() - cam.min()) * 255).astype(np.uint8)
                binary = u8 > int(t * u8.max())
                best = max(brute_iou(e, g) for e in brute_boxes(binary) for g in gt)
                correct += best >= d
            accs.append(correct / len(cams))
        box_acc[d] = max(accs)
    return box_acc, float(np.mean(list(box_acc.values())))


def test_matches_brute_force_on_random_maps():
    rng = np.random.default_rng(7)
    cams, gts = [], []
    for _ in range(12):
        cam = ndimage.gaussian_filter(rng.random((24, 30)), sigma=1.5)  # blobs, holes, nesting
        cams.append(cam)
        gt = []
        for _ in range(rng.integers(1, 4)):
            x0, y0 = rng.integers(0, 20), rng.integers(0, 16)
            gt.append([x0, y0, x0 + rng.integers(2, 10), y0 + rng.integers(2, 8)])
        gts.append(gt)
    deltas = (0.3, 0.5, 0.7)
    res = max_box_acc_v2(cams, gts, deltas=deltas, interval=0.05)
    expected_acc, expected_mean = brute_max_box_acc_v2(cams, gts, deltas, 0.05)
    assert res["box_acc"] == pytest.approx(expected_acc)
    assert res["max_box_acc_v2"] == pytest.approx(expected_mean)
    assert 0 < res["max_box_acc_v2"] < 1  # the random case is not degenerate
