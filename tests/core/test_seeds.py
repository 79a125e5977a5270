"""The seed programs (../shared/seeds) with `model_to_estimator` swapped for k2e's.

Each function below is the seed's code as published, with only the data source replaced
by the generated data (no downloads here) and Python 2 idioms made Python 3.
"""

from __future__ import annotations

import tempfile

import numpy as np
import pytest


@pytest.fixture
def model_to_estimator(tf, monkeypatch):
    import k2e_core

    # Each seed is a script of its own: layer names (`dense_input`) as in a fresh process,
    # and the same initial weights every run (unseeded, one run in ten ended above its bound).
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    monkeypatch.setattr(tf.keras.estimator, "model_to_estimator", k2e_core.model_to_estimator)
    return tf.keras.estimator.model_to_estimator


def test_tutorial_keras_model_to_estimator(tf, gen, model_to_estimator):
    """tutorials/estimator/keras_model_to_estimator (iris)."""
    x, y = gen.iris(150, seed=0)

    model = tf.keras.models.Sequential(
        [
            tf.keras.layers.Dense(16, activation="relu", input_shape=(4,)),
            tf.keras.layers.Dropout(0.2),
            tf.keras.layers.Dense(3),
        ]
    )
    model.compile(
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer="adam"
    )

    def input_fn():
        dataset = tf.data.Dataset.from_tensor_slices((x, y))
        dataset = dataset.map(lambda features, labels: ({"dense_input": features}, labels))
        dataset = dataset.batch(32).repeat()
        return dataset

    model_dir = tempfile.mkdtemp()
    keras_estimator = tf.keras.estimator.model_to_estimator(keras_model=model, model_dir=model_dir)
    keras_estimator.train(input_fn=input_fn, steps=500)
    eval_result = keras_estimator.evaluate(input_fn=input_fn, steps=10)
    print(f"Eval result: {eval_result}")

    assert eval_result["global_step"] == 500
    assert eval_result["loss"] < 0.5  # separable classes: a trained model, not a random one


def test_blog_bag_of_words(tf, gen, model_to_estimator):
    """New in TensorFlow 1.4: converting a Keras model to a TensorFlow Estimator."""
    keras = tf.keras
    from tensorflow.keras.layers import Dense
    from tensorflow.keras.models import Sequential

    max_words, num_classes = 1000, 20
    x_train, y_train = gen.bag_of_words(600, seed=1)
    x_test, y_test = gen.bag_of_words(100, seed=2)
    x_train, x_test = x_train.astype(np.float32), x_test.astype(np.float32)
    y_train, y_test = y_train.astype(np.float32), y_test.astype(np.float32)

    model = Sequential()
    model.add(keras.layers.Dense(512, input_shape=(max_words,), activation="relu", name="posts"))
    model.add(Dense(num_classes, activation="softmax", name="labels"))
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])

    estimator_model = keras.estimator.model_to_estimator(keras_model=model)

    def input_function(features, labels=None, shuffle=False):
        input_fn = tf.compat.v1.estimator.inputs.numpy_input_fn(
            x={"posts_input": features}, y=labels, shuffle=shuffle
        )
        return input_fn

    estimator_model.train(input_fn=input_function(x_train, y_train, True))
    score = estimator_model.evaluate(input_function(x_test, labels=y_test))

    examples = x_test[:5]
    predictions = list(estimator_model.predict(input_function(examples)))
    predicted = [int(np.argmax(list(p.values())[0])) for p in predictions]

    assert score["accuracy"] > 0.8
    assert len(predictions) == 5
    assert sum(p == t for p, t in zip(predicted, y_test[:5].argmax(1))) >= 4


def test_api_doc_sample_weights(tf, model_to_estimator):
    """API doc, 'Sample Weights': {'features': ..., 'sample_weights': ...} input."""
    features = np.random.RandomState(0).normal(size=(64, 4)).astype(np.float32)
    targets = (features[:, :1] > 0).astype(np.float32)

    def run(sample_weights):
        keras_model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(4,), name="d")])
        keras_model.compile(loss="mse", optimizer=tf.keras.optimizers.legacy.SGD(0.1))
        estimator = tf.keras.estimator.model_to_estimator(keras_model)

        def input_fn():
            return tf.data.Dataset.from_tensors(
                ({"features": {"d_input": features}, "sample_weights": sample_weights}, targets)
            )

        estimator.train(input_fn, steps=1)
        return estimator.evaluate(input_fn, steps=1)["loss"]

    weighted = run(np.where(targets[:, 0] > 0, 1.0, 0.0).astype(np.float32))
    unweighted = run(np.ones(64, np.float32))
    assert weighted != pytest.approx(unweighted)


def test_api_doc_customized_export_signature(tf, tmp_path, model_to_estimator):
    """API doc, 'Example with customized export signature' (dict inputs and outputs)."""
    inputs = {"a": tf.keras.Input((3,), name="a"), "b": tf.keras.Input((3,), name="b")}
    outputs = {
        "c": tf.keras.layers.Dense(1, name="c")(inputs["a"]),
        "d": tf.keras.layers.Dense(2, activation="softmax", name="d")(inputs["b"]),
    }
    keras_model = tf.keras.Model(inputs, outputs)
    keras_model.compile(loss="mse", optimizer="sgd")
    export_outputs = {
        "c": tf.estimator.export.RegressionOutput,
        "d": tf.estimator.export.ClassificationOutput,
    }

    estimator = tf.keras.estimator.model_to_estimator(keras_model, export_outputs=export_outputs)

    features = {"a": np.ones((4, 3), np.float32), "b": np.ones((4, 3), np.float32)}
    sample_weights = np.ones(4, np.float32)
    targets = {"c": np.ones((4, 1), np.float32), "d": np.eye(2, dtype=np.float32)[[0, 1, 0, 1]]}

    def input_fn():
        return tf.data.Dataset.from_tensors(
            ({"features": features, "sample_weights": sample_weights}, targets)
        )

    estimator.train(input_fn, steps=1)

    receiver = tf.estimator.export.build_raw_serving_input_receiver_fn(
        {k: tf.zeros([1, 3]) for k in ("a", "b")}
    )
    path = estimator.export_saved_model(str(tmp_path), receiver).decode()
    assert {"serving_default", "c", "d"} <= set(tf.saved_model.load(path).signatures)


def test_api_doc_metric_names_map(tf, gen, model_to_estimator):
    """API doc, metric_names_map on the two-input two-output model."""
    config = tf.estimator.RunConfig(tf_random_seed=1)
    input_a = tf.keras.layers.Input(shape=(16,), name="input_a")
    input_b = tf.keras.layers.Input(shape=(16,), name="input_b")
    dense = tf.keras.layers.Dense(8, name="dense_1")
    interm_a = dense(input_a)
    interm_b = dense(input_b)
    merged = tf.keras.layers.concatenate([interm_a, interm_b], name="merge")
    output_a = tf.keras.layers.Dense(3, activation="softmax", name="dense_2")(merged)
    output_b = tf.keras.layers.Dense(2, activation="softmax", name="dense_3")(merged)
    keras_model = tf.keras.models.Model(inputs=[input_a, input_b], outputs=[output_a, output_b])
    keras_model.compile(
        loss="categorical_crossentropy",
        optimizer="rmsprop",
        metrics={"dense_2": "categorical_accuracy", "dense_3": "categorical_accuracy"},
    )

    metric_names_map = {
        "dense_2_categorical_accuracy": "acc_1",
        "dense_3_categorical_accuracy": "acc_2",
    }
    keras_est = tf.keras.estimator.model_to_estimator(
        keras_model=keras_model, config=config, metric_names_map=metric_names_map
    )

    data = gen.two_io(128, seed=1)

    def input_fn():
        return tf.data.Dataset.from_tensor_slices(
            (
                {"input_a": data["input_a"], "input_b": data["input_b"]},
                {"dense_2": data["dense_2"], "dense_3": data["dense_3"]},
            )
        ).batch(32)

    keras_est.train(input_fn, steps=4)
    assert {"acc_1", "acc_2", "loss"} <= set(keras_est.evaluate(input_fn))


def test_guide_creating_estimators_from_keras_models(tf, model_to_estimator):
    """Guide, 'Creating Estimators from Keras models' (a small CNN stands in for InceptionV3)."""
    keras_cnn = tf.keras.Sequential(
        [
            tf.keras.layers.Conv2D(4, 3, activation="relu", input_shape=(16, 16, 3)),
            tf.keras.layers.GlobalAveragePooling2D(),
            tf.keras.layers.Dense(5, activation="softmax"),
        ]
    )
    keras_cnn.compile(
        optimizer=tf.keras.optimizers.SGD(learning_rate=0.0001, momentum=0.9),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    est_cnn = tf.keras.estimator.model_to_estimator(keras_model=keras_cnn)
    train_data = np.random.RandomState(0).rand(8, 16, 16, 3).astype(np.float32)
    train_labels = np.eye(5, dtype=np.float32)[np.arange(8) % 5]
    train_input_fn = tf.compat.v1.estimator.inputs.numpy_input_fn(
        x={keras_cnn.input_names[0]: train_data}, y=train_labels, num_epochs=1, shuffle=False
    )
    est_cnn.train(input_fn=train_input_fn, steps=2000)
    assert est_cnn.get_variable_value("global_step") == 1  # one epoch of 8 rows, batch 128
