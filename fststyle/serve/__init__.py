"""The local web page (fststyle serve): a Starlette app over the Stylizer, the optimisation engines and compare's scoring."""
