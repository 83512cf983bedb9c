"""Path sums: the expansion of dy/df_j into its terms, counts and lengths, the path sum of
any block, and the gradient each path length carries.
"""
