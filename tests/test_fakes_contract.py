"""The fakes the fast suite injects satisfy the same protocols as the real detector, classifier and components.

If a protocol grows a member or changes a signature, this fails before the fakes silently test another API.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from fakes import FakeClassifier, FakeComponents, FakeDetector, PixelClassifier

from ferbatch.classes import IMAGE_SIZE, NUM_CLASSES
from ferbatch.config import ScoreSettings
from ferbatch.scoring import (
    Components,
    DetectorSettings,
    EmotionClassifier,
    Face,
    FaceDetector,
    KerasClassifier,
    ScoringComponents,
    YuNetDetector,
    default_detector_path,
)


def _same_signature(protocol: type, implementation: type, method: str) -> None:
    expected = inspect.signature(getattr(protocol, method))
    actual = inspect.signature(getattr(implementation, method))
    assert [(p.name, p.kind, p.default) for p in actual.parameters.values()] == [
        (p.name, p.kind, p.default) for p in expected.parameters.values()], (implementation, method)


@pytest.mark.parametrize("detector", [FakeDetector(), YuNetDetector(default_detector_path(),
                                                                    DetectorSettings.from_settings(ScoreSettings()))])
def test_detectors_satisfy_the_face_detector_protocol(detector):
    assert isinstance(detector, FaceDetector) and isinstance(detector.name, str)
    _same_signature(FaceDetector, type(detector), "detect")
    faces = detector.detect(np.zeros((120, 250, 3), np.uint8), 1.0)
    assert isinstance(faces, list) and all(isinstance(face, Face) for face in faces)


@pytest.mark.parametrize("classifier", [FakeClassifier(), PixelClassifier()])
def test_fake_classifiers_satisfy_the_emotion_classifier_protocol(classifier):
    assert isinstance(classifier, EmotionClassifier) and isinstance(classifier.version, str)
    _same_signature(EmotionClassifier, type(classifier), "predict")
    _same_signature(EmotionClassifier, KerasClassifier, "predict")
    probabilities = classifier.predict(np.zeros((5, IMAGE_SIZE, IMAGE_SIZE), np.uint8))
    assert probabilities.shape == (5, NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)


def test_fake_components_satisfy_the_components_protocol_as_the_real_ones_do():
    for implementation in (FakeComponents, Components):
        for method in ("detector", "classifier"):
            _same_signature(ScoringComponents, implementation, method)
    components = FakeComponents()
    assert isinstance(components, ScoringComponents)
    assert isinstance(components.detector(), FaceDetector) and isinstance(components.classifier(), EmotionClassifier)
